//! # stockroom-postgres
//!
//! Stockroom's PostgreSQL adapter: every port of `stockroom-core` on a sqlx `PgPool`.
//!
//! ```no_run
//! use stockroom_core::{NewProduct, Store, StoreConfig, StoreExt, TransferRequest};
//! use stockroom_postgres::PostgresStore;
//!
//! # async fn demo() -> stockroom_core::Result<()> {
//! let config = StoreConfig::new("postgres://app:secret@127.0.0.1:5432/shop")
//!     .with_min_connections(10)
//!     .with_application_name("shop-api");
//! let store = PostgresStore::connect(&config).await?; // applies the migrations
//!
//! let mut uow = store.begin().await?;
//! let a = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-B")?.with_stock(10)?).await?;
//! let b = uow.products().create(NewProduct::new("Red mug", "red-mug", "MUG-R")?).await?;
//! uow.commit().await?;
//!
//! store.transfer(&TransferRequest::new(a.id, b.id, 3)).await?;
//! let mut read = store.read().await?; // a pooled connection, no transaction
//! assert_eq!(read.products().get(b.id).await?.map(|p| p.stock), Some(3));
//! store.close().await;
//! # Ok(()) }
//! ```
//!
//! ## How it maps the design
//!
//! - **Schema**: embedded migrations (`migrations/`), applied on connect unless
//!   `run_migrations` is false, bookkept in `stockroom_migrations` (see [A guest in the
//!   application's database](#a-guest-in-the-applications-database)), make Stockroom's own
//!   tables; the application's entities get theirs from their declarations (see [Your own
//!   entities](#your-own-entities)). Uniqueness among live rows is a partial unique index per
//!   declared rule, named by the rule (`Unique::index`); `CHECK`s for integer ranges and enum
//!   values; foreign keys with the declared `ON DELETE` (none on the ledger); `(created_at, id)`
//!   indexes for the list order; a pg_trgm GIN index on `search_text` for search.
//! - **One implementation for every entity**: the record ports (`RecordReader`,
//!   `RecordWriter`) are implemented once, over statements written once per entity from its
//!   declaration when the store is built and shared by its sessions; the statements whose text
//!   depends on the call (a list's conditions, an update's `SET` list) are written per call.
//!   Rows are bound and read by the declared storage class (`text`, `bigint`, `boolean`,
//!   `timestamptz`, `uuid`; an integer column may be narrower). A new entity, Stockroom's or
//!   the application's, needs no code here.
//! - **Round trips**: one statement per operation on the success path. `get_many` is
//!   `= ANY($1)`; `create_many` is one `INSERT … SELECT FROM UNNEST(…)` of typed arrays per
//!   10,000 rows, except for 1,000 rows or more: a binary `COPY` into the table under a
//!   savepoint (four round trips, less work per row; each integer written at its column's
//!   width, learned at the first `COPY`; a row that breaks a rule, refers to a deleted row, or
//!   a `COPY` the server refuses where `INSERT` may run, such as under row-level security,
//!   sends the batch the `INSERT` way, which names the rule);
//!   `exists` is `SELECT EXISTS`; `search` returns the page and the total in one statement;
//!   `get_related` (a product with its category and creator) is one statement with a `LEFT
//!   JOIN` per reference field; rating statistics are one `GROUP BY`; `adjust_stock` (an
//!   increment of an integer field) is one conditional `UPDATE … RETURNING` that keeps the
//!   field in its declared range; `lock` is
//!   `SELECT … ORDER BY id FOR UPDATE`. A stock move (`move_stock`, what a transfer runs) is one
//!   statement of data-modifying CTEs (key lookup, both rows locked in id order, checks, ledger
//!   insert, both stock updates); `Store::move_stock` sends it in autocommit, a transaction of
//!   its own without `BEGIN` or `COMMIT`, so a transfer is one round trip. Reads of a read
//!   session run on a pooled connection without `BEGIN`/`COMMIT`. The search document
//!   (`search_text`) is the core's `search_document` of the row, written on insert and
//!   recomputed by an update that changes one of its fields (from the rows read under lock
//!   when the update sets only some of them).
//! - **Expected failures do not abort the transaction**: inserts use `ON CONFLICT DO NOTHING`
//!   and check that their references are live, updates carry guards (referenced rows live, new
//!   unique values free; an update of many rows changes every row or none, and two of them
//!   cannot take one unique value), so a conflict or a missing reference changes nothing and
//!   a second statement, run only then, says which rule failed, in the order every backend
//!   reports: the row missing, a stale version, references, then unique rules (a race lost
//!   between the two is `Error::Transient`). The unit of work stays usable, as on the other
//!   backends. A statement that does fail
//!   on the server (a race the guards could not see, a lost connection) aborts the PostgreSQL
//!   transaction: the unit of work then refuses to commit (rather than let PostgreSQL turn the
//!   `COMMIT` into a silent rollback) until it is rolled back, or rolled back to a savepoint.
//! - **Isolation**: the level [`PostgresOptions::isolation`] asks for (`BEGIN ISOLATION LEVEL
//!   …`), else the server's default, READ COMMITTED unless the role or database says otherwise.
//!   A transfer's statement locks both rows in id order (`SELECT … ORDER BY id FOR UPDATE`)
//!   before it reads their stock, and writes the stocks it read under the lock, so concurrent
//!   transfers serialize on the rows they share and cannot deadlock. At READ COMMITTED no
//!   serialization failure occurs; at REPEATABLE READ or SERIALIZABLE a contended unit of work
//!   fails with 40001, which maps to `Error::Transient` and which the transfer and the retry
//!   runner retry (CI runs the whole conformance suite at SERIALIZABLE too).
//! - **Other engines**: at connect the store asks `version()` which engine it talks to
//!   ([`Engine`]: PostgreSQL, CockroachDB, YugabyteDB) and leaves out what that engine lacks
//!   (see the `engine` module and `docs/scale-out.md`).
//! - **Configuration**: `min_connections` connections are kept, up to `max_connections` are
//!   opened under load and the extra ones closed after `idle_timeout`; `max_lifetime` replaces older connections;
//!   [`PostgresOptions::test_before_acquire`] makes a connection the server closed invisible
//!   to callers without a ping (it says how); `application_name`
//!   names the sessions, [`PostgresOptions::session_settings`] (default `jit=off`) are sent as
//!   startup options, [`PostgresOptions::lock_timeout`] (default 5 s, unless the URL's
//!   `options` set one) becomes `lock_timeout` (a longer wait for a row lock fails as
//!   `Error::Transient`), [`PostgresOptions::statement_timeout`] (default 30 s, likewise)
//!   becomes `statement_timeout` (the server cancels a statement that runs longer, so that
//!   none outlives the request that sent it by much: `Error::Transient`, nothing applied);
//!   migrations are exempt from both; on a borrowed pool they are set per transaction, see
//!   [`PostgresOptions`]), and statements are logged under the target
//!   `stockroom::sql` (all at `debug` with `log_statements`, slow ones at `warn`). The password
//!   never appears in `Debug` output or logs.
//! - **Connections** come from sqlx's pool; on Stockroom's own pool a session that ends with
//!   its connection in a known state leaves it on a stack of Stockroom's own for the next
//!   session, for up to a second (sqlx's pool pings every connection it takes back, and its
//!   acquire and release each pass through a task), so a session taken per request costs no
//!   round trip beyond its statements. A connection opened by a tokio runtime that has shut
//!   down since (a store shared by threads with runtimes of their own) is replaced the way
//!   [`PostgresOptions::test_before_acquire`] describes, whatever that option says. (sqlx's pool closes idle connections past `idle_timeout` from a task on
//!   the runtime that connected it; once that runtime is gone, they are closed when used past
//!   `max_lifetime` instead.)
//! - **Deadlines**: within a retried operation's deadline
//!   ([`RetryPolicy::deadline`](stockroom_core::RetryPolicy::deadline)), the server ends the
//!   waits when the time is up, so the refusal is definite: a unit of work's `BEGIN` sets its
//!   transaction's `lock_timeout` and `statement_timeout` to the time left where shorter
//!   (`SET LOCAL`, same round trip), a transfer's one statement its `lock_timeout`, and the
//!   wait for a pooled connection ends at the deadline; all three fail as `Error::Transient`,
//!   with nothing applied (checked in `tests/deadlines.rs`: once the row is free, nothing has
//!   moved). A commit is not covered by `statement_timeout` (PostgreSQL runs deferred
//!   triggers at commit after the statement's timer is off): one still running when the retry
//!   runner gives up is `Error::AmbiguousCommit`.
//! - **Errors** map by SQLSTATE (see the `error` module): 23505 conflict (on the rule whose
//!   index, or the primary key of the entity whose table, the error names, from the store's
//!   declarations), 23514 validation, 23503 not found (of the entity whose table the error
//!   names), 40001/40P01/55P03 transient, 57014 (a statement the server canceled) transient,
//!   connection loss (a session the server ended included: 57P0x such as an
//!   `idle_session_timeout`, 25P03, any FATAL; such a connection is dead, and replaced as
//!   [`PostgresOptions::test_before_acquire`] says) and pool timeouts unavailable; a `COMMIT` (or a stock move that commits by itself) whose connection is lost
//!   while the server runs it, or SQLSTATE 40003 anywhere, is `Error::AmbiguousCommit`: its
//!   outcome is unknown, and it is never retried blindly. A caller never matches on a sqlx error; sqlx types appear only where the
//!   application shares sqlx with Stockroom ([`PostgresStore::from_pool`], [`connection`],
//!   and the re-exported [`sqlx`]).
//!
//! ## Your own entities
//!
//! An entity the application declares ([`stockroom_core::schema::Schema`], registered with
//! [`StoreConfig::with_entity`](stockroom_core::StoreConfig::with_entity) or
//! [`PostgresOptions::with_entity`]) is served by the same statements as Stockroom's own, with
//! the same rules. Its table is the declaration's:
//!
//! - **Made by Stockroom** (`Ddl::Stockroom`, the default): with the migrations (on connect,
//!   [`PostgresStore::from_pool`] or [`PostgresStore::migrate`], under the same advisory lock),
//!   Stockroom reads the table from `information_schema` and `pg_indexes` and compares it with
//!   the declaration. A missing table is created (`uuid` key; `text`, `bigint`, `boolean`,
//!   `timestamptz` columns; `CHECK`s named `<table>_<field>_check`; a partial unique index per
//!   rule; `<table>_order`; an index per reference field; the trigram index of a search
//!   document where `pg_trgm` is installed; foreign keys `<table>_<field>_fk` with the
//!   declared `ON DELETE`), and recorded in `stockroom_entities` (its definition and the
//!   definition's SHA-256). A field added as nullable or with a default is added to the table
//!   (`ALTER TABLE … ADD COLUMN`), a new unique rule gets its index. Anything else that differs
//!   (a field renamed, retyped or dropped, a required field added without a default) fails the
//!   connect with `Error::Schema` naming the entity and the columns, and nothing is changed;
//!   so does a table of that name Stockroom did not make (`TableTaken`). Every entity is
//!   compared before any is changed, and the changes are one transaction.
//! - **Made by the application** (`Ddl::Application`): Stockroom only compares, and fails the
//!   connect on a difference; a column the declaration lacks is fine if an insert may leave it
//!   out. Declare the foreign keys with the `ON DELETE` the declaration says: a delete for
//!   good relies on them for the rows that refer to the deleted one.
//!
//! With `run_migrations` false, nothing of this runs on connect: [`PostgresStore::migrate`]
//! does it.
//!
//! ## TLS
//!
//! With the `tls` feature (on by default; always on with the `stockroom` facade's `postgres`
//! feature) connections speak TLS through rustls as the URL's `sslmode` asks, with libpq's
//! meanings: `disable`, `prefer` (the default: TLS if the server offers it, the certificate
//! unchecked), `require` (TLS or no connection, the certificate unchecked), `verify-ca` (signed
//! by a trusted authority) and `verify-full` (also for the URL's host name). The trusted
//! authorities are Mozilla's, built in, and the file named by `sslrootcert`. A refused handshake
//! is [`Error::Unavailable`](stockroom_core::Error::Unavailable), its reason starting with
//! `TLS failure:`. Without the feature, `require` and the `verify-*` modes fail to connect.
//!
//! ## Read replicas
//!
//! [`StoreConfig::replica_urls`](stockroom_core::StoreConfig::replica_urls) (or
//! `STOCKROOM_REPLICA_URLS`) names PostgreSQL streaming replicas of the primary at `url`.
//! [`PostgresStore::connect`] gives each one a pool of its own, with the primary pool's
//! settings (connections, timeouts, application name, session settings), connected lazily:
//! a replica that is down does not fail the connect, and no migrations run on a replica (it
//! is read-only, and gets the primary's schema by replication). A store on a borrowed pool
//! ([`PostgresStore::from_pool`]) has no replicas.
//!
//! - **Reads go to the replicas, in turn.** Each [`read`](stockroom_core::Store::read)
//!   session takes the next replica (round robin), skipping those marked down.
//! - **Everything else goes to the primary**: units of work (`begin`), transfers
//!   (`move_stock`), `health`, `readiness`, `migrate`, and
//!   [`read_primary`](stockroom_core::Store::read_primary) sessions.
//! - **Falling back.** A replica that does not lend a connection within the pool's
//!   `acquire_timeout`, and never more than 2 s (its server is down, refuses, or all its
//!   connections are busy), is marked down for 5 s and the next replica is tried; when none
//!   serves, the read session is the primary's, as on a store without replicas. A connection
//!   lent by a replica is not pinged first (as on the primary); if the session's first
//!   statement finds it dead (the replica crashed or restarted), the replica is marked down and
//!   the statement is sent again on the next replica, or the primary, whatever
//!   `test_before_acquire` says (a read can be sent twice). So a read session taken after a
//!   replica died succeeds on the primary: at once when the store had a connection to the
//!   replica (it is found dead), otherwise after waiting that bound (2 s at most) once, for
//!   the first read that meets the dead replica. A statement after the first one, on a replica
//!   that dies during the session, fails as on the primary (`Unavailable`).
//! - **Coming back.** Reads skip a replica marked down; once its 5 s have passed, the next
//!   read that would have taken it starts a probe in the background (connections of its pool
//!   pinged until one answers, within the same bound) and goes elsewhere meanwhile: when the
//!   probe succeeds the replica serves reads again, otherwise it stays down another 5 s. A
//!   read never waits on a replica known to be down. Each change is logged under
//!   `stockroom::sql` (marked down at `warn`, back at `info`), with the URL's password hidden,
//!   as in the store's `Debug`, which lists the replicas and their state.
//! - **Isolation.** A replica's sessions start at the level
//!   [`PostgresOptions::isolation`] asks for, except SERIALIZABLE, which a hot standby does not
//!   have (it would refuse every statement): they run at REPEATABLE READ then.
//! - **Lag.** A replica applies the primary's commits a little later (usually milliseconds;
//!   seconds or more under load, or while its replay waits behind a long query): a read session
//!   on a replica may not see a unit of work that has just committed, even this process's own.
//!   Use [`read_primary`](stockroom_core::Store::read_primary) for a read that must see your
//!   own writes (read-your-writes), such as the page shown right after a form was saved. Two
//!   read sessions in a row may go to different replicas, each at its own point in time. A
//!   long read on a replica may also be cancelled by the replica when it conflicts with the
//!   replay (a query conflict with recovery, which maps to `Error::Transient`).
//!
//! ## A guest in the application's database
//!
//! Stockroom never assumes it owns the database, the pool or the process.
//!
//! - **Its own migration bookkeeping.** Stockroom's applied migrations are recorded in
//!   `stockroom_migrations`, under a session advisory lock of Stockroom's own (a fixed key, not
//!   the one sqlx's migrator derives from the database name), taken on a connection that is
//!   closed rather than given back to the pool if the migrations fail or their future is
//!   dropped (a `from_pool` cancelled while it waits for the lock leaves no lock behind). The application's sqlx
//!   migrations keep `_sqlx_migrations` and sqlx's lock: the two migrators run in any order, or
//!   at once, and neither meets the other's versions. A database that an earlier Stockroom
//!   migrated (its rows in `_sqlx_migrations`) still opens: under the lock, in one transaction,
//!   the rows whose version and checksum are those of Stockroom's embedded migrations are moved
//!   to `stockroom_migrations`; the application's rows are not touched. When there is none to
//!   move (every connect after the first), `_sqlx_migrations` is only read, so a role refused
//!   `DELETE` on it connects. Stockroom's tables are
//!   where its unqualified table names resolve (the `search_path`, `public` by default); a
//!   schema of their own is not offered, since on a shared pool it would take either a
//!   `search_path` change per read session (read sessions have no transaction for a
//!   `SET LOCAL` to be scoped to) or schema-qualified names in every statement.
//! - **The application's pool.** [`PostgresStore::from_pool`] builds a store on an existing
//!   [`sqlx::PgPool`] (re-exported here as [`sqlx`], so both use the same version), with
//!   [`PostgresOptions`] for what is Stockroom's to decide. [`PostgresStore::connect`] takes the
//!   same path with a pool of its own. Closing a store on a borrowed pool stops Stockroom's
//!   sessions and leaves the pool open.
//! - **The application's SQL in a unit of work.** [`connection`] gives the transaction's
//!   connection, so the application's own statements commit or roll back with Stockroom's
//!   writes; such a unit of work checks, right before `COMMIT`, that the application's SQL
//!   neither aborted nor ended the transaction, and otherwise refuses to commit.
//! - **Every public future is `Send`**, so each can be spawned on a multi-thread runtime.
//!
//! ```no_run
//! use std::time::Duration;
//! use stockroom_core::{NewProduct, Store};
//! use stockroom_postgres::{connection, sqlx, PostgresOptions, PostgresStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/shop").await?;
//! // The application runs its own sqlx migrations as before (`_sqlx_migrations`).
//! let options = PostgresOptions::default().with_lock_timeout(Some(Duration::from_secs(2)));
//! let store = PostgresStore::from_pool(pool.clone(), options).await?; // applies Stockroom's
//!
//! let mut uow = store.begin().await?;
//! let mug = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-B")?).await?;
//! sqlx::query("INSERT INTO audit (product_id, action) VALUES ($1, 'created')")
//!     .bind(mug.id.as_uuid())
//!     .execute(&mut *connection(uow.as_mut())?)
//!     .await?;
//! uow.commit().await?; // the product and the audit row, or neither
//!
//! store.close().await; // the application's pool stays open
//! # Ok(()) }
//! ```
//!
//! ## The outbox
//!
//! The transactional outbox of [`stockroom_core::outbox`] is two tables made by a migration:
//! `stockroom_outbox` (the events, each with its `sequence`, an identity) and
//! `stockroom_outbox_lanes` (the 32 lanes relays lease).
//!
//! - **Publishing** is one statement in the unit of work's transaction: it takes
//!   `pg_advisory_xact_lock(1398034242, lane)` (the class key is `0x53544f42`, `STOB`; the
//!   second key is the lane, 0 to 31) for each distinct lane of the application's events, in
//!   ascending order, then inserts the events in order. The locks last until the unit of work
//!   ends, so within an aggregate sequence order is commit order; a transaction holds at most
//!   32 of them. Stockroom's own events (with [`PostgresOptions::own_events`]) take none: the
//!   row lock of their product orders them; a transfer's one statement writes its own
//!   `stockroom.stock.moved` event when it applies. On CockroachDB and YugabyteDB (no advisory
//!   locks, see [`Engine::has_advisory_locks`]) events are written without the locks, and
//!   sequence order is insert order.
//! - **Claims** ([`Store::claim_events`](stockroom_core::Store::claim_events)) are one
//!   statement in autocommit on the primary: free lanes with an undelivered event, oldest first,
//!   locked `FOR UPDATE SKIP LOCKED` (concurrent claims lease disjoint lanes and never wait for
//!   each other), leased until the server's `now()` plus the lease, with their events in
//!   sequence order. Settling a claim, the backlog and the purge are one statement each.
//!
//! ## Testing against PostgreSQL
//!
//! The `testing` feature (off by default) adds the `testing` module: a server for tests (the
//! configured one, else a throwaway cluster started from the installed PostgreSQL binaries, else
//! a skip with one line of explanation) and a fresh database per test.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod analyze;
mod codec;
mod connections;
mod copy;
mod engine;
mod error;
mod migrate;
mod movements;
mod options;
mod outbox;
mod plans;
mod replicas;
mod session;
mod sql;
mod store;
mod tables;

#[cfg(feature = "testing")]
pub mod testing;

/// The sqlx this adapter is built on, so that an application's pool, connections and queries
/// are of the same version as Stockroom's.
pub use sqlx;

pub use engine::Engine;
pub use error::classify;
pub use options::{IsolationLevel, PostgresOptions};
pub use session::{connection, read_connection};
pub use store::PostgresStore;

/// Rows per statement of `create_many`.
pub const CREATE_MANY_BATCH: usize = sql::BATCH;

/// The README's examples, compiled as doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

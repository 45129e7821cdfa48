//! What is particular to the PostgreSQL adapter: connection settings, schema, statements that
//! must not abort a transaction, error mapping from real server errors, and the store's life.

mod support;

use std::time::Duration;

use sqlx::{Connection, Row};
use stockroom_core::{
    Constraint, EntityKind, Error, NewCategory, NewProduct, NewUser, Page, ProductFilter,
    ProductId, ProductPatch, StockDelta, Store, StoreConfig, StoreExt, Total, TransferRequest,
    UnitOfWork, UnitOfWorkExt,
};
use stockroom_postgres::{PostgresOptions, PostgresStore, CREATE_MANY_BATCH};
use support::{count_products, product, seed_products, TestDatabase};

async fn with_store<F, Fut>(body: F)
where
    F: FnOnce(PostgresStore, TestDatabase) -> Fut,
    Fut: std::future::Future<Output = (PostgresStore, TestDatabase)>,
{
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    // The database is dropped whether the body passed or panicked.
    db.clone()
        .drop_after(async move {
            let (store, _db) = body(store, db).await;
            store.close().await;
        })
        .await;
}

/// Asserts that `result` is a conflict on `expected`.
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, Error>, expected: Constraint) {
    assert!(
        matches!(result, Err(Error::Conflict { constraint }) if constraint == expected),
        "expected a conflict on {expected}, got {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_carry_the_application_name_and_session_settings() {
    with_store(|store, db| async move {
        assert!(store
            .options()
            .session_settings
            .contains(&("jit".into(), "off".into())));
        let mut admin = support::admin().await;
        // Hold a read session so that at least one connection is busy and visible.
        let mut read = store.read().await.unwrap();
        read.products()
            .count(&ProductFilter::default())
            .await
            .unwrap();
        let n: i64 = sqlx::query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $1",
        )
        .bind(db.name())
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
        assert!(n >= 1, "no session named {} on the server", db.name());
        drop(read);
        let _ = admin.close().await;
        // Session settings reach every connection: with the tables off the search path, the
        // same store configuration cannot see them.
        let config = db.config().with_run_migrations(false);
        let mut options = PostgresOptions::from_config(&config);
        options
            .session_settings
            .push(("search_path".into(), "nowhere".into()));
        let hidden = PostgresStore::connect_with(&config, options).await.unwrap();
        let mut read = hidden.read().await.unwrap();
        assert!(matches!(
            read.products().count(&ProductFilter::default()).await,
            Err(Error::Backend { .. })
        ));
        drop(read);
        hidden.close().await;
        // A setting the server refuses fails the connect.
        let config = db.config().with_run_migrations(false);
        let options = PostgresOptions::from_config(&config)
            .with_session_settings(vec![("jit".into(), "banana".into())]);
        assert!(PostgresStore::connect_with(&config, options).await.is_err());
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_and_max_connections_bound_the_connections() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_min_connections(2).with_max_connections(3);
    let store = PostgresStore::connect(&config).await.unwrap();
    // Three sessions may be held at once, a fourth waits and times out as Unavailable.
    let a = store.read().await.unwrap();
    let b = store.read().await.unwrap();
    let c = store.read().await.unwrap();
    assert_eq!(store.open_connections(), 3);
    let short = db
        .config()
        .with_min_connections(1)
        .with_max_connections(1)
        .with_acquire_timeout(Duration::from_millis(300));
    let tight = PostgresStore::connect(&short.with_run_migrations(false))
        .await
        .unwrap();
    let held = tight.begin().await.unwrap();
    match tight.read().await {
        Err(Error::Unavailable { .. }) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected Unavailable, got a session"),
    }
    drop(held);
    assert!(
        tight.read().await.is_ok(),
        "the connection came back after the rollback"
    );
    tight.close().await;
    drop((a, b, c));
    store.close().await;
    db.drop_now().await;
}

/// A connection a session gives back while another caller waits for one goes to that caller,
/// not onto the store's stack of kept connections: with one connection, a session taken while
/// another is held gets it once the other is dropped (else it would time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_for_a_connection_gets_the_one_given_back() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db
        .config()
        .with_min_connections(1)
        .with_max_connections(1)
        .with_acquire_timeout(Duration::from_secs(5));
    let store = std::sync::Arc::new(PostgresStore::connect(&config).await.unwrap());
    for round in 0..3 {
        let mut held = store.read().await.unwrap();
        // A statement, so the connection is given back in a known state and may be kept.
        held.products()
            .count(&ProductFilter::default())
            .await
            .unwrap();
        let waiter = tokio::spawn({
            let store = std::sync::Arc::clone(&store);
            async move {
                let mut read = store.read().await?;
                read.products().count(&ProductFilter::default()).await
            }
        });
        // Let the waiter reach the pool's queue before the connection comes back.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
        let counted = waiter.await.unwrap();
        assert_eq!(counted.ok(), Some(0), "round {round}");
    }
    store.close().await;
    db.drop_now().await;
}

/// `close` gives back the connections the store kept between sessions, so the pool closes
/// every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_the_connections_kept_between_sessions() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store =
        PostgresStore::connect(&db.config().with_min_connections(2).with_max_connections(3))
            .await
            .unwrap();
    let [a, b] = seed_products(&store, [1, 2]).await.map(|p| p.id);
    let (r1, r2) = tokio::join!(count_products(&store), count_products(&store));
    assert_eq!((r1, r2), (2, 2));
    store
        .transfer(&TransferRequest::new(a, b, 1))
        .await
        .unwrap();
    assert!(
        format!("{store:?}").contains("kept_connections: "),
        "{store:?}"
    );
    store.close().await;
    assert_eq!(store.open_connections(), 0, "{store:?}");
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_other_schemes_and_reports_an_unreachable_server() {
    let sqlite = StoreConfig::new("sqlite://data.db");
    assert!(matches!(
        PostgresStore::connect(&sqlite).await,
        Err(Error::Validation { field: "url", .. })
    ));
    // Nothing listens on port 1.
    let nowhere = StoreConfig::new("postgresql://u:hunter2@127.0.0.1:1/db")
        .with_acquire_timeout(Duration::from_secs(2));
    match PostgresStore::connect(&nowhere).await {
        Err(e @ Error::Unavailable { .. }) => {
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A listener that accepts TCP connections and never answers on them (a server hung, or a
/// port forwarded to something that is not PostgreSQL), and its URL.
async fn silent_server() -> (tokio::task::JoinHandle<()>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // kept open, never written to
        }
    });
    (silent, format!("postgres://u@127.0.0.1:{port}/db"))
}

/// `connect` and `from_pool` against a server that accepts and never answers fail with
/// `Unavailable` after about the acquire timeout (one second here; the bound checked is a
/// generous 15 s), instead of waiting for an answer forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_server_that_never_answers_gives_up_after_the_acquire_timeout() {
    let (silent, url) = silent_server().await;
    let config = StoreConfig::new(&url).with_acquire_timeout(Duration::from_secs(1));
    let bound = Duration::from_secs(15);
    match tokio::time::timeout(bound, PostgresStore::connect(&config)).await {
        Ok(Err(Error::Unavailable { .. })) => {}
        Ok(other) => panic!("connect: expected Unavailable, got {other:?}"),
        Err(_) => panic!("connect still waited for the silent server after {bound:?}"),
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&url)
        .unwrap();
    let borrowed = PostgresStore::from_pool(pool, PostgresOptions::default());
    match tokio::time::timeout(bound, borrowed).await {
        Ok(Err(Error::Unavailable { .. })) => {}
        Ok(other) => panic!("from_pool: expected Unavailable, got {other:?}"),
        Err(_) => panic!("from_pool still waited for the silent server after {bound:?}"),
    }
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_never_shows_the_password() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // The test server trusts local connections, so the password is never asked for.
    let (scheme, rest) = db.url().split_once("://").unwrap();
    let url = match rest.split_once('@') {
        Some((user, host)) if !user.contains(':') => format!("{scheme}://{user}:hunter2@{host}"),
        Some(_) => db.url().to_owned(),
        None => format!("{scheme}://postgres:hunter2@{rest}"),
    };
    let store = PostgresStore::connect(&db.config().with_run_migrations(true))
        .await
        .unwrap();
    let mut with_password = db.config();
    with_password.url = url;
    let other = PostgresStore::connect(&with_password).await.unwrap();
    for text in [
        format!("{store:?}"),
        format!("{other:?}"),
        format!("{:?}", other.config().expect("a store of its own pool")),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    other.close().await;
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_has_the_named_indexes_and_checks() {
    with_store(|store, db| async move {
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let indexes: Vec<String> =
            sqlx::query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        let catalog = stockroom_core::schema::Catalog::new(&[]).unwrap();
        let rules = catalog.entries().iter().flat_map(|e| e.schema.unique);
        for index in rules
            .map(|u| u.index)
            .chain([stockroom_core::adapter::IDEMPOTENCY_KEY_INDEX])
        {
            assert!(
                indexes.iter().any(|i| i == index),
                "{index} missing from {indexes:?}"
            );
        }
        assert!(indexes.iter().any(|i| i == "products_search"));
        assert!(indexes.iter().any(|i| i == "products_order"));
        // CHECK (stock >= 0) holds even against raw SQL.
        let [p] = seed_products(&store, [1]).await;
        let err = sqlx::query("UPDATE products SET stock = -1 WHERE id = $1")
            .bind(p.id.as_uuid())
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(err.as_database_error().unwrap().code().unwrap(), "23514");
        let _ = conn.close().await;
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrations_the_schema_is_absent_until_migrate() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.config().with_run_migrations(false))
        .await
        .unwrap();
    let mut read = store.read().await.unwrap();
    match read.products().count(&ProductFilter::default()).await {
        Err(Error::Backend { .. }) => {}
        other => panic!("expected a backend error (no table), got {other:?}"),
    }
    drop(read);
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    assert_eq!(count_products(&store).await, 0);
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_failures_leave_the_unit_of_work_usable() {
    with_store(|store, db| async move {
        let mut uow = store.begin().await.unwrap();
        let a = uow.products().create(product(1)).await.unwrap();
        let b = uow.products().create(product(2)).await.unwrap();
        // Each of these fails on a rule; none aborts the PostgreSQL transaction.
        let dup = NewProduct::new("Again", "product-1", "SKU-X").unwrap();
        assert_conflict(uow.products().create(dup).await, Constraint::PRODUCT_SLUG);
        let taken = ProductPatch::new().with_sku("SKU-1").unwrap();
        assert_conflict(
            uow.products().update(b.id, &taken, None).await,
            Constraint::PRODUCT_SKU,
        );
        assert!(matches!(
            uow.products()
                .adjust_stock(a.id, StockDelta::new(-11).unwrap())
                .await,
            Err(Error::InsufficientStock {
                available: 10,
                requested: 11,
                ..
            })
        ));
        let ghost = stockroom_core::CategoryId::new();
        let orphan = product(3).with_category_id(ghost);
        assert!(matches!(
            uow.products().create(orphan).await,
            Err(Error::NotFound {
                entity: EntityKind::CATEGORY,
                ..
            })
        ));
        // Two rows cannot take one slug (or email): nothing changes, nothing aborts.
        let same = ProductPatch::new().with_slug("same-slug").unwrap();
        assert_conflict(
            uow.products().update_many(&[a.id, b.id], &same).await,
            Constraint::PRODUCT_SLUG,
        );
        let c1 = uow
            .categories()
            .create(NewCategory::new("One", "one").unwrap())
            .await
            .unwrap();
        let c2 = uow
            .categories()
            .create(NewCategory::new("Two", "two").unwrap())
            .await
            .unwrap();
        let same = stockroom_core::CategoryPatch::new()
            .with_slug("one")
            .unwrap();
        assert_conflict(
            uow.categories().update_many(&[c1.id, c2.id], &same).await,
            Constraint::CATEGORY_SLUG,
        );
        let u1 = uow
            .users()
            .create(stockroom_core::NewUser::new("a@x.io", "A").unwrap())
            .await
            .unwrap();
        let u2 = uow
            .users()
            .create(stockroom_core::NewUser::new("b@x.io", "B").unwrap())
            .await
            .unwrap();
        let same = stockroom_core::UserPatch::new()
            .with_email("c@x.io")
            .unwrap();
        assert_conflict(
            uow.users().update_many(&[u1.id, u2.id], &same).await,
            Constraint::USER_EMAIL,
        );
        // One row may take a value; a row may keep its own.
        let one = ProductPatch::new().with_slug("product-1").unwrap();
        assert_eq!(
            uow.products()
                .update_many(&[a.id, a.id], &one)
                .await
                .unwrap(),
            1
        );
        let many = vec![product(4), product(5), product(4)];
        assert_conflict(
            uow.products().create_many(many).await,
            Constraint::PRODUCT_SLUG,
        );
        // …and the unit of work commits what succeeded.
        uow.commit().await.unwrap();
        assert_eq!(count_products(&store).await, 2);
        let mut read = store.read().await.unwrap();
        assert!(
            read.products()
                .by_slug("product-4")
                .await
                .unwrap()
                .is_none(),
            "create_many is all or nothing"
        );
        drop(read);
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_makes_commit_fail_instead_of_silently_rolling_back() {
    /// `loser` renames `p2` to the slug that `winner` gives `p1` before committing: the guard
    /// of `loser`'s update cannot see the uncommitted rename, so the unique index itself fires
    /// (23505) once `winner` commits, and PostgreSQL aborts `loser`'s transaction.
    async fn race(
        store: &PostgresStore,
        p1: stockroom_core::ProductId,
        p2: stockroom_core::ProductId,
        slug: &str,
        loser: &mut Box<dyn UnitOfWork>,
    ) -> Result<(), Error> {
        let patch = ProductPatch::new().with_slug(slug).unwrap();
        let mut winner = store.begin().await.unwrap();
        winner.products().update(p1, &patch, None).await.unwrap();
        let mut products = loser.products();
        let (lost, committed) = tokio::join!(products.update(p2, &patch, None), async {
            // The test stores are named after their database.
            support::until_a_session_waits_for_a_lock(
                &store
                    .config()
                    .expect("a store of its own pool")
                    .application_name,
            )
            .await;
            winner.commit().await
        });
        committed.unwrap();
        lost.map(drop)
    }

    with_store(|store, db| async move {
        let [p1, p2] = seed_products(&store, [1, 2]).await.map(|p| p.id);

        let mut loser = store.begin().await.unwrap();
        loser.products().create(product(3)).await.unwrap();
        let lost = race(&store, p1, p2, "first-race", &mut loser).await;
        assert_conflict(lost, Constraint::PRODUCT_SLUG);
        match loser.commit().await {
            Err(Error::Backend { message, .. }) => {
                assert!(message.contains("rolled back"), "{message}")
            }
            other => panic!("commit after an aborted statement must fail, got {other:?}"),
        }
        assert_eq!(count_products(&store).await, 2, "product 3 was rolled back");

        // A savepoint rolled back to clears the failure.
        let mut loser = store.begin().await.unwrap();
        loser.products().create(product(3)).await.unwrap();
        let sp = loser.savepoint().await.unwrap();
        assert!(race(&store, p1, p2, "second-race", &mut loser)
            .await
            .is_err());
        loser.rollback_to(sp).await.unwrap();
        loser.commit().await.unwrap();
        assert_eq!(count_products(&store).await, 3);
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_unit_of_work_rolls_back_and_frees_its_connection() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store =
        PostgresStore::connect(&db.config().with_min_connections(1).with_max_connections(1))
            .await
            .unwrap();
    for round in 0..3 {
        let mut uow = store.begin().await.unwrap();
        uow.products().create(product(round)).await.unwrap();
        drop(uow);
    }
    assert_eq!(count_products(&store).await, 0);
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_past_the_last_page_still_counts_and_tracks_updates() {
    with_store(|store, db| async move {
        let mut uow = store.begin().await.unwrap();
        let news: Vec<NewProduct> = (0..30).map(product).collect();
        let created = uow.products().create_many(news).await.unwrap();
        // Name, sku and description changes each rebuild the searched text.
        let p = created[0].id;
        let patch = ProductPatch::new()
            .with_name("Éclair Tin")
            .unwrap()
            .with_description(Some("50% off\nnow"))
            .unwrap();
        uow.products().update(p, &patch, None).await.unwrap();
        uow.commit().await.unwrap();
        let mut read = store.read().await.unwrap();
        let filter = ProductFilter::default().with_search("product").unwrap();
        let past = read
            .products()
            .search(&filter, Page::new(10, 1_000).unwrap())
            .await
            .unwrap();
        assert_eq!((past.items.len(), past.total), (0, Total::Exact(29)));
        let page = read
            .products()
            .search(&filter, Page::new(10, 20).unwrap())
            .await
            .unwrap();
        assert_eq!((page.items.len(), page.total), (9, Total::Exact(29)));
        for (q, hits) in [
            ("éclair", 1),
            ("ÉCLAIR TIN", 1),
            ("50%", 1),
            ("0%_", 0),
            ("sku-0", 1),
            ("off\nnow", 1),
        ] {
            let filter = ProductFilter::default().with_search(q);
            let Ok(f) = filter else {
                assert!(q.contains('\n'), "{q:?} refused");
                continue; // control characters are refused by SearchText
            };
            let r = read.products().search(&f, Page::default()).await.unwrap();
            assert_eq!(r.total, Total::Exact(hits), "query {q:?}");
        }
        // The description can be cleared and the name left alone.
        drop(read);
        let mut uow = store.begin().await.unwrap();
        let cleared = ProductPatch::new()
            .with_description(None)
            .unwrap()
            .with_sku("NEW-SKU")
            .unwrap();
        uow.products().update(p, &cleared, None).await.unwrap();
        uow.commit().await.unwrap();
        let mut read = store.read().await.unwrap();
        for (q, hits) in [("50%", 0), ("new-sku", 1), ("éclair tin", 1), ("sku-0", 0)] {
            let f = ProductFilter::default().with_search(q).unwrap();
            let r = read.products().search(&f, Page::default()).await.unwrap();
            assert_eq!(r.total, Total::Exact(hits), "query {q:?}");
        }
        drop(read);
        (store, db)
    })
    .await;
}

/// A batch large enough to be copied (`COPY`) keeps `create_many`'s rules: every field as
/// given, references included; a duplicate inside, a value taken by a stored row, a deleted
/// category each fail the whole batch with the error of the first failing row in input order;
/// nothing is written, and the unit of work goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_many_of_a_large_batch_keeps_the_rules() {
    with_store(|store, db| async move {
        // Past the size from which products are copied (`COPY`).
        const N: usize = 1_500;
        let mut uow = store.begin().await.unwrap();
        let kept = uow
            .categories()
            .create(NewCategory::new("Kept", "kept").unwrap())
            .await
            .unwrap();
        let gone = uow
            .categories()
            .create(NewCategory::new("Gone", "gone").unwrap())
            .await
            .unwrap();
        assert!(uow.categories().soft_delete(gone.id).await.unwrap());
        let author = uow
            .users()
            .create(NewUser::new("ann@example.com", "Ann").unwrap())
            .await
            .unwrap();
        let taken = uow.products().create(product(N + 1)).await.unwrap();
        let batch = |n: usize| -> Vec<NewProduct> { (0..n).map(product).collect() };

        let mut duplicate = batch(N);
        duplicate[200] = NewProduct::new("Again", "again", "SKU-7").unwrap();
        assert_conflict(
            uow.products().create_many(duplicate).await,
            Constraint::PRODUCT_SKU,
        );
        let mut clash = batch(N);
        clash[150] = NewProduct::new("Clash", &taken.slug, "CLASH").unwrap();
        assert_conflict(
            uow.products().create_many(clash).await,
            Constraint::PRODUCT_SLUG,
        );
        let mut dead = batch(N);
        dead[100] = product(N + 2).with_category_id(gone.id);
        match uow.products().create_many(dead).await {
            Err(Error::NotFound { entity, id }) => {
                assert_eq!((entity, id), (EntityKind::CATEGORY, gone.id.into()))
            }
            other => panic!(
                "expected the deleted category, got {:?}",
                other.map(|rows| rows.len())
            ),
        }
        let mut first_wins = batch(N);
        first_wins[50] = NewProduct::new("Clash", &taken.slug, "CLASH").unwrap();
        first_wins[100] = product(N + 2).with_category_id(gone.id);
        assert_conflict(
            uow.products().create_many(first_wins).await,
            Constraint::PRODUCT_SLUG,
        );

        let mut news = batch(N);
        news[10] = product(N + 3)
            .with_description("In a category, by Ann")
            .unwrap()
            .with_category_id(kept.id)
            .with_created_by(author.id);
        let created = uow.products().create_many(news).await.unwrap();
        uow.commit().await.unwrap();
        let mut read = store.read().await.unwrap();
        let ids: Vec<ProductId> = created.iter().map(|p| p.id).collect();
        let mut stored = read.products().get_many(&ids).await.unwrap();
        stored.sort_by_key(|p| ids.iter().position(|id| *id == p.id));
        assert_eq!(stored, created, "the rows as copied");
        assert_eq!(
            read.products()
                .count(&ProductFilter::default())
                .await
                .unwrap(),
            N as u64 + 1
        );
        drop(read);
        (store, db)
    })
    .await;
}

/// A batch large enough to be copied goes in by `INSERT` where the server refuses `COPY` but
/// not `INSERT`: here row-level security, which PostgreSQL enforces on `INSERT` and refuses
/// `COPY FROM` under (0A000), forced on the table for its owner, Stockroom's role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_many_of_a_large_batch_falls_back_to_insert_where_copy_is_refused() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let setup = [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "GRANT USAGE, CREATE ON SCHEMA public TO {role}",
    ];
    support::as_role(db, &setup, |as_role| async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(as_role)
            .await
            .unwrap();
        let store = PostgresStore::from_pool(pool.clone(), PostgresOptions::default())
            .await
            .unwrap();
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "ALTER TABLE products ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE products FORCE ROW LEVEL SECURITY; \
             CREATE POLICY every_row ON products USING (true) WITH CHECK (true)",
        )
        .execute(&mut admin)
        .await
        .unwrap();
        let _ = admin.close().await;

        const N: usize = 1_500; // past the size from which products are copied
        let mut uow = store.begin().await.unwrap();
        let created = uow
            .products()
            .create_many((0..N).map(product).collect())
            .await
            .unwrap_or_else(|e| panic!("create_many of {N} under row-level security: {e:?}"));
        assert_eq!(created.len(), N);
        // The unit of work goes on after the refused COPY.
        uow.products().create(product(N)).await.unwrap();
        uow.commit().await.unwrap();
        assert_eq!(count_products(&store).await, N as u64 + 1);
        store.close().await;
        pool.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_many_spans_batches_all_or_nothing() {
    with_store(|store, db| async move {
        let n = CREATE_MANY_BATCH + 5;
        let mut uow = store.begin().await.unwrap();
        let mut news: Vec<NewProduct> = (0..n).map(product).collect();
        // The last row of the second batch repeats a sku of the first batch.
        news.push(NewProduct::new("Late", "late", "SKU-3").unwrap());
        assert_conflict(
            uow.products().create_many(news).await,
            Constraint::PRODUCT_SKU,
        );
        uow.commit().await.unwrap();
        assert_eq!(count_products(&store).await, 0);
        let mut uow = store.begin().await.unwrap();
        let created = uow
            .products()
            .create_many((0..n).map(product).collect())
            .await
            .unwrap();
        uow.commit().await.unwrap();
        assert_eq!(created.len(), n);
        assert_eq!(count_products(&store).await, n as u64);
        let mut read = store.read().await.unwrap();
        let last = read.products().get(created[n - 1].id).await.unwrap();
        assert_eq!(last.as_ref(), Some(&created[n - 1]));
        drop(read);
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_deadlock_is_reported_as_transient() {
    with_store(|store, db| async move {
        let [a, b] = seed_products(&store, [1, 2]).await.map(|p| p.id);
        let mut first = store.begin().await.unwrap();
        let mut second = store.begin().await.unwrap();
        let up = StockDelta::new(1).unwrap();
        first.products().adjust_stock(a, up).await.unwrap();
        second.products().adjust_stock(b, up).await.unwrap();
        // Opposite order: the server detects the deadlock and fails one of the two. Each
        // rolls back as soon as its statement returns, so the survivor can go on.
        async fn step(
            mut uow: Box<dyn UnitOfWork>,
            id: stockroom_core::ProductId,
            delay: u64,
        ) -> Result<(), Error> {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let result = uow
                .products()
                .adjust_stock(id, StockDelta::new(1).unwrap())
                .await;
            uow.rollback().await.unwrap();
            result.map(drop)
        }
        let (r1, r2) = tokio::join!(step(first, b, 0), step(second, a, 50));
        let failures: Vec<&Error> = [&r1, &r2]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
            .collect();
        assert_eq!(failures.len(), 1, "{r1:?} {r2:?}");
        assert!(failures[0].is_transient(), "{:?}", failures[0]);
        (store, db)
    })
    .await;
}

/// A transfer that waited for a row another transfer held goes on with the stock that transfer
/// left: here it could not have moved 12 units from the 10 its snapshot saw, only from the 15
/// the other transfer left. (A single UPDATE of `stock - 12` would check `stock >= 0` on the
/// version its snapshot saw, and fail, before finding the row updated.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_waited_for_a_row_moves_the_stock_left_there() {
    with_store(|store, db| async move {
        let [a, b] = seed_products(&store, [1, 2]).await.map(|p| p.id);
        let mut first = store.begin().await.unwrap();
        first
            .transfer(&TransferRequest::new(a, b, 5))
            .await
            .unwrap();
        let second = TransferRequest::new(b, a, 12);
        let (moved, ()) = tokio::join!(store.transfer(&second), async {
            support::until_a_session_waits_for_a_lock(db.name()).await;
            first.commit().await.unwrap();
        });
        let moved = moved.expect("the second transfer, once the first committed");
        assert_eq!((moved.source_id, moved.quantity), (b, 12));
        let mut read = store.read().await.unwrap();
        let stocks: Vec<(ProductId, i64)> = read
            .products()
            .get_many(&[a, b])
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.id, p.stock))
            .collect();
        assert_eq!(
            stocks,
            vec![(a, 17), (b, 3)],
            "10/10, then -5/+5, then +12/-12"
        );
        assert_eq!(read.movements().count().await.unwrap(), 2);
        drop(read);
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_is_unavailable() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    store.health().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.health().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        store.begin().await.err(),
        Some(Error::Unavailable { .. })
    ));
    assert!(matches!(
        store.read().await.err(),
        Some(Error::Unavailable { .. })
    ));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_sessions_in_flight_and_rolls_their_work_back() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let mut read = store.read().await.unwrap();
    let mut uow = store.begin().await.unwrap();
    uow.products().create(product(1)).await.unwrap();
    let started = std::time::Instant::now();
    store.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "close waited {:?}",
        started.elapsed()
    );
    assert!(matches!(
        read.products().count(&ProductFilter::default()).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        uow.products().create(product(2)).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(uow.commit().await, Err(Error::Unavailable { .. })));
    drop(read);
    let again = PostgresStore::connect(&db.config()).await.unwrap();
    assert_eq!(count_products(&again).await, 0, "nothing committed");
    again.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_timeout_bounds_the_wait_for_a_row_lock() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config();
    let options =
        PostgresOptions::from_config(&config).with_lock_timeout(Some(Duration::from_millis(200)));
    let store = PostgresStore::connect_with(&config, options).await.unwrap();
    let [p] = seed_products(&store, [1]).await;
    let mut holder = store.begin().await.unwrap();
    holder.products().lock(&[p.id]).await.unwrap();
    let mut waiter = store.begin().await.unwrap();
    let started = std::time::Instant::now();
    let result = waiter
        .products()
        .adjust_stock(p.id, StockDelta::new(1).unwrap())
        .await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    waiter.rollback().await.unwrap();
    holder.rollback().await.unwrap();
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_once_whatever_the_lock_timeout() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // A lock timeout of 1 ms applies to statements, not to the migrator waiting for its lock.
    let config = db.config();
    let options =
        PostgresOptions::from_config(&config).with_lock_timeout(Some(Duration::from_millis(1)));
    let connects = (0..4).map(|_| PostgresStore::connect_with(&config, options.clone()));
    let stores = futures_util::future::join_all(connects).await;
    for store in stores {
        let store = store.expect("every concurrent connect succeeds");
        assert_eq!(count_products(&store).await, 0);
        store.close().await;
    }
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_served_by_the_trigram_index() {
    with_store(|store, db| async move {
        // A catalogue big enough (100,000 rows) for the planner to prefer the index; the rows
        // are made by the server, as `search_document` would make them for ASCII text.
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO products (id, name, slug, sku, status, stock, search_text, created_at, \
             updated_at) SELECT gen_random_uuid(), 'Product ' || i, 'product-' || i, 'SKU-' || i, \
             'draft', 10, 'product ' || i || E'\\nsku-' || i, now(), now() \
             FROM generate_series(1, 100000) AS i; ANALYZE products",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query(
            "EXPLAIN (COSTS OFF) SELECT id FROM products WHERE deleted_at IS NULL \
             AND search_text LIKE '%product 1234%' ESCAPE '\\'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        let _ = conn.close().await;
        assert!(
            plan.iter().any(|l| l.contains("products_search")),
            "{plan:#?}"
        );
        let mut read = store.read().await.unwrap();
        let filter = ProductFilter::default()
            .with_search("Product 1234")
            .unwrap();
        let page = read
            .products()
            .search(&filter, Page::default())
            .await
            .unwrap();
        assert_eq!(page.total, Total::Exact(11)); // 1234 and 12340 to 12349
        drop(read);
        (store, db)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_deleted_under_a_create_is_not_found() {
    with_store(|store, db| async move {
        let mut setup = store.begin().await.unwrap();
        let category = setup
            .categories()
            .create(NewCategory::new("Mugs", "mugs").unwrap())
            .await
            .unwrap();
        setup.commit().await.unwrap();
        // `deleter` removes the category for good but has not committed when `creator`'s insert
        // (which still sees it live) checks its foreign key: the check waits, then fails with
        // 23503 once the delete commits.
        let mut deleter = store.begin().await.unwrap();
        deleter.categories().hard_delete(category.id).await.unwrap();
        let mut creator = store.begin().await.unwrap();
        let mut products = creator.products();
        let (created, committed) = tokio::join!(
            products.create(product(1).with_category_id(category.id)),
            async {
                support::until_a_session_waits_for_a_lock(db.name()).await;
                deleter.commit().await
            }
        );
        committed.unwrap();
        match created {
            Err(Error::NotFound {
                entity: EntityKind::CATEGORY,
                id,
            }) => {
                assert_eq!(id, category.id)
            }
            other => panic!("expected NotFound(category), got {other:?}"),
        }
        creator.rollback().await.unwrap();
        (store, db)
    })
    .await;
}

/// How many `ANALYZE` commands `products` has had (autovacuum's are counted apart), once
/// PostgreSQL has published at least one (it publishes table statistics within about ten
/// seconds); `None` after 30 s without any.
async fn products_analyzed(db: &TestDatabase) -> Option<i64> {
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut counted = None;
    for _ in 0..60 {
        let n: i64 = sqlx::query_scalar(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'products'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if n > 0 {
            counted = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    conn.close().await.unwrap();
    counted
}

/// A unit of work that inserts 1,000 rows or more into a table the statistics never counted
/// leaves the table analyzed once after its commit, in the background; one of 10 rows before
/// it did not (`analyze_count`, which autovacuum's analyzes leave alone, is 1). With
/// `analyze_after_bulk_insert` off, the only `ANALYZE` is the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_insert_is_analyzed_after_its_commit() {
    for on in [true, false] {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let options = PostgresOptions::from_config(&db.config()).with_analyze_after_bulk_insert(on);
        let store = PostgresStore::connect_with(&db.config(), options)
            .await
            .unwrap();
        for rows in [0..10, 10..2_010] {
            let mut uow = store.begin().await.unwrap();
            uow.products()
                .create_many(rows.map(product).collect())
                .await
                .unwrap();
            uow.commit().await.unwrap();
        }
        if !on {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query("ANALYZE products")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        assert_eq!(
            products_analyzed(&db).await,
            Some(1),
            "analyze after bulk insert {on}: the analyzes of products"
        );
        store.close().await;
        db.drop_now().await;
    }
}

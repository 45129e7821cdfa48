//! TLS to the server, as the URL's `sslmode` and `sslrootcert` ask for it (the `tls` feature, on
//! by default and with the facade's `postgres` feature).
//!
//! These tests need the server to offer TLS on TCP: the machine's PostgreSQL does (Debian's
//! `ssl-cert-snakeoil` certificate, made for the name `localhost`). Against the test harness's
//! throwaway cluster (a Unix socket only) or a server without TLS they are skipped with one
//! line, or fail under `CI` / `STOCKROOM_TEST_REQUIRE_POSTGRES=1`.

mod support;

use stockroom_core::{Error, ProductFilter, Store};
use stockroom_postgres::PostgresStore;
use support::{admin, TestDatabase};

/// A test database on a server that offers TLS over TCP at 127.0.0.1, with the path of the
/// server's certificate (readable here, since the server is local); `None` (after a line on
/// stderr) where there is none, a panic where one is required.
async fn database_with_tls() -> Option<(TestDatabase, String)> {
    let db = TestDatabase::create().await?;
    let mut admin = admin().await;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let certificate: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let why_not = if db.server().is_throwaway() || !db.url().contains("@127.0.0.1:") {
        Some(format!(
            "the test server is not the local one on TCP ({})",
            db.url()
        ))
    } else if ssl != "on" {
        Some("the test server does not offer TLS (ssl = off)".to_owned())
    } else if std::fs::metadata(&certificate).is_err() {
        Some(format!(
            "the server's certificate {certificate} is not readable here"
        ))
    } else {
        None
    };
    match why_not {
        None => Some((db, certificate)),
        Some(reason) if stockroom_postgres::testing::postgres_required() => {
            db.drop_now().await;
            panic!("TLS tests required but cannot run: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping a TLS test: {reason}");
            db.drop_now().await;
            None
        }
    }
}

/// `url` with `params` added to its query string.
fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// `url` naming the server `localhost`, the name its certificate holds, instead of 127.0.0.1.
fn by_name(url: &str) -> String {
    url.replacen("@127.0.0.1:", "@localhost:", 1)
}

async fn connect(db: &TestDatabase, url: String) -> stockroom_core::Result<PostgresStore> {
    let mut config = db.config();
    config.url = url;
    PostgresStore::connect(&config).await
}

/// Whether each of the store's sessions on `db` is encrypted: `(sessions, encrypted)`, after a
/// read so that at least one session exists.
async fn sessions_over_tls(db: &TestDatabase, store: &PostgresStore) -> (i64, i64) {
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap();
    drop(read);
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .fetch_one(&mut admin().await)
    .await
    .unwrap()
}

fn expect_refused(result: stockroom_core::Result<PostgresStore>, cause: &str) -> String {
    match result {
        Err(Error::Unavailable { reason, .. }) => {
            assert!(
                reason.contains("TLS") && reason.contains(cause),
                "the refusal names TLS and `{cause}`: {reason}"
            );
            reason
        }
        Err(other) => panic!("expected Unavailable naming `{cause}`, got {other:?}"),
        Ok(_) => panic!("expected the connection to be refused for `{cause}`, it connected"),
    }
}

/// `sslmode=require`: every session of the store is encrypted (the certificate is not checked,
/// as with libpq).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_every_session() {
    let Some((db, _)) = database_with_tls().await else {
        return;
    };
    let store = connect(&db, with_params(db.url(), "sslmode=require"))
        .await
        .unwrap_or_else(|e| panic!("sslmode=require: {e:?}"));
    let (sessions, encrypted) = sessions_over_tls(&db, &store).await;
    assert!(sessions > 0, "the store holds sessions: {sessions}");
    assert_eq!(encrypted, sessions, "encrypted sessions of {sessions}");
    store.close().await;
    db.drop_now().await;
}

/// `sslmode=disable`: no session is encrypted, though the server offers TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_keeps_every_session_in_plain_text() {
    let Some((db, _)) = database_with_tls().await else {
        return;
    };
    let store = connect(&db, with_params(db.url(), "sslmode=disable"))
        .await
        .unwrap_or_else(|e| panic!("sslmode=disable: {e:?}"));
    let (sessions, encrypted) = sessions_over_tls(&db, &store).await;
    assert!(sessions > 0, "the store holds sessions: {sessions}");
    assert_eq!(encrypted, 0, "encrypted sessions of {sessions}");
    store.close().await;
    db.drop_now().await;
}

/// `sslmode=verify-full` with the authority that signed the server's certificate in
/// `sslrootcert`, and the server named as its certificate names it: connected, encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_to_the_name_a_trusted_certificate_holds() {
    let Some((db, certificate)) = database_with_tls().await else {
        return;
    };
    let url = with_params(
        &by_name(db.url()),
        &format!("sslmode=verify-full&sslrootcert={certificate}"),
    );
    let store = connect(&db, url)
        .await
        .unwrap_or_else(|e| panic!("verify-full with the server's own authority: {e:?}"));
    let (sessions, encrypted) = sessions_over_tls(&db, &store).await;
    assert!(
        sessions > 0 && encrypted == sessions,
        "{encrypted} of {sessions}"
    );
    store.close().await;
    db.drop_now().await;
}

/// `sslmode=verify-full` to 127.0.0.1, a name the server's certificate does not hold (it says
/// `localhost`): refused as `Unavailable`, saying the name does not match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_hold() {
    let Some((db, certificate)) = database_with_tls().await else {
        return;
    };
    let url = with_params(
        db.url(),
        &format!("sslmode=verify-full&sslrootcert={certificate}"),
    );
    expect_refused(connect(&db, url).await, "not valid for name");
    db.drop_now().await;
}

/// `sslmode=verify-full` without `sslrootcert`: the server's self-signed certificate is signed
/// by no authority among the public ones, so the connection is refused as `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_no_trusted_authority_signed() {
    let Some((db, _)) = database_with_tls().await else {
        return;
    };
    let url = with_params(&by_name(db.url()), "sslmode=verify-full");
    expect_refused(connect(&db, url).await, "UnknownIssuer");
    db.drop_now().await;
}

/// `sslmode=verify-ca` checks the authority but not the name: 127.0.0.1 connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_authority_and_not_the_name() {
    let Some((db, certificate)) = database_with_tls().await else {
        return;
    };
    let trusted = with_params(
        db.url(),
        &format!("sslmode=verify-ca&sslrootcert={certificate}"),
    );
    let store = connect(&db, trusted)
        .await
        .unwrap_or_else(|e| panic!("verify-ca with the server's own authority: {e:?}"));
    let (sessions, encrypted) = sessions_over_tls(&db, &store).await;
    assert!(
        sessions > 0 && encrypted == sessions,
        "{encrypted} of {sessions}"
    );
    store.close().await;
    let untrusted = with_params(db.url(), "sslmode=verify-ca");
    expect_refused(connect(&db, untrusted).await, "UnknownIssuer");
    db.drop_now().await;
}

//! Which server the tests are pointed at, and URLs of its databases.

use std::path::Path;

/// The server the tests try when nothing is configured.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The configured test server: `STOCKROOM_TEST_DATABASE_URL`, else `DATABASE_URL` when it is a
/// `postgres://` or `postgresql://` URL (an application's `DATABASE_URL` may name SQLite), else
/// [`DEFAULT_URL`]. An empty variable counts as unset.
pub fn configured_url() -> String {
    resolve(|name| std::env::var(name).ok())
}

/// [`configured_url`] over any source of variables.
fn resolve(var: impl Fn(&str) -> Option<String>) -> String {
    let set = |name| var(name).filter(|v| !v.is_empty());
    if let Some(url) = set("STOCKROOM_TEST_DATABASE_URL") {
        return url;
    }
    match set("DATABASE_URL") {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
        _ => DEFAULT_URL.to_owned(),
    }
}

/// `url` with its database replaced by `database`; user, password, host, port and query are
/// kept.
///
/// ```
/// use stockroom_postgres::testing::with_database;
///
/// assert_eq!(
///     with_database("postgres://u:pw@db:5433/postgres?sslmode=disable", "shop"),
///     "postgres://u:pw@db:5433/shop?sslmode=disable"
/// );
/// ```
///
/// # Panics
///
/// If `url` has no scheme (`…://`).
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// The URL of the `postgres` database, as the `postgres` role, of a server whose Unix socket is
/// `<dir>/.s.PGSQL.<port>`: the directory is the URL's host, percent-encoded (as libpq and sqlx
/// read a host that starts with `/`), so that the socket stays in the URL whatever part of it a
/// test replaces, and no TCP address is ever named.
pub(super) fn socket_url(dir: &Path, port: u16) -> Result<String, String> {
    let dir = dir
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", dir.display()))?;
    let mut host = String::with_capacity(dir.len() * 3);
    for byte in dir.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            host.push(char::from(byte));
        } else {
            host.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(format!("postgres://postgres@{host}:{port}/postgres"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(vars: &[(&str, &str)]) -> String {
        resolve(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_test_variable_wins() {
        let url = resolve_with(&[
            ("STOCKROOM_TEST_DATABASE_URL", "postgres://t@h:1/x"),
            ("DATABASE_URL", "postgres://app@h:2/y"),
        ]);
        assert_eq!(url, "postgres://t@h:1/x");
    }

    #[test]
    fn database_url_counts_only_when_it_is_postgres() {
        for url in ["postgres://app@h/y", "postgresql://app@h/y"] {
            assert_eq!(resolve_with(&[("DATABASE_URL", url)]), url);
        }
        for other in ["sqlite://shop.db", "memory://", "mysql://h/db"] {
            assert_eq!(resolve_with(&[("DATABASE_URL", other)]), DEFAULT_URL);
        }
    }

    #[test]
    fn empty_or_missing_variables_give_the_default() {
        assert_eq!(resolve_with(&[]), DEFAULT_URL);
        let empty = [("STOCKROOM_TEST_DATABASE_URL", ""), ("DATABASE_URL", "")];
        assert_eq!(resolve_with(&empty), DEFAULT_URL);
    }

    #[test]
    fn a_socket_url_names_the_directory_and_the_port() {
        use sqlx::postgres::PgConnectOptions;

        let dir = Path::new("/tmp/it's a dir/stockroom-test-pg-0/cluster");
        let url = socket_url(dir, 5433).unwrap();
        assert_eq!(
            url,
            "postgres://postgres@%2Ftmp%2Fit%27s%20a%20dir%2Fstockroom-test-pg-0%2Fcluster:5433\
             /postgres"
        );
        for url in [url.clone(), with_database(&url, "shop")] {
            let options: PgConnectOptions = url.parse().unwrap();
            assert_eq!(
                options.get_socket().map(|p| p.as_path()),
                Some(dir),
                "{url}"
            );
            assert_eq!(options.get_port(), 5433);
            assert_eq!(options.get_username(), "postgres");
        }
        let shop: PgConnectOptions = with_database(&url, "shop").parse().unwrap();
        assert_eq!(shop.get_database(), Some("shop"));
    }

    #[test]
    fn with_database_replaces_only_the_database() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/t"),
            ("postgres://u@h:5432", "postgres://u@h:5432/t"),
            ("postgres://u@h:5432/", "postgres://u@h:5432/t"),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/t?sslmode=disable",
            ),
            (
                "postgresql://h?application_name=a",
                "postgresql://h/t?application_name=a",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "t"), expected, "{url}");
        }
    }
}
